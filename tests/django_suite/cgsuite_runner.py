"""A DiscoverRunner that also writes every test's outcome to ``$CGSUITE_RESULTS`` (JSON), so
that ``scripts/django-suite`` can hold the run against the expected-failures list without
parsing text. Works with ``--parallel``: the workers' events are replayed into this result,
a class's or module's skip or error included (Django's own replay files those under the
test that ran last in the worker, so that test was recorded as skipped and the skipped
class's tests got no outcome at all)."""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from django.test.runner import DiscoverRunner, ParallelTestSuite, RemoteTestResult, RemoteTestRunner
from django.test.utils import iter_test_cases


def _test_id(test: Any) -> str:
    test = getattr(test, "test_case", test)  # a subtest counts for its test
    return test.id() if hasattr(test, "id") else str(test)


# a test's outcome is the worst of its parts: a failing subtest fails the test, a skipped one
# (after which unittest reports no success) skips it
_RANK = {"ok": 0, "skip": 1, "xfail": 1, "xpass": 2, "fail": 3, "error": 3}


class RecordingResult(unittest.TextTestResult):
    outcomes: dict[str, str] = {}

    def _record(self, test: Any, outcome: str) -> None:
        test_id = _test_id(test)
        if _RANK[outcome] >= _RANK[self.outcomes.get(test_id, "ok")]:
            self.outcomes[test_id] = outcome

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self._record(test, "ok")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "fail")

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._record(test, "error")

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skip")

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "xfail")  # Django's own @expectedFailure

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "xpass")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failure = issubclass(err[0], test.failureException)
            self._record(test, "fail" if failure else "error")


class _HolderResult(RemoteTestResult):
    """A worker's result that sends a ``setUpClass``/``setUpModule`` skip or error with the
    holder's id (``setUpClass (module.Class)``), as Django does only for an error before the
    worker's first test."""

    def addSkip(self, test: Any, reason: str) -> None:
        if isinstance(test, unittest.suite._ErrorHolder):
            self.events.append(("addSkip", -1, test.id(), reason))
            unittest.TestResult.addSkip(self, test, reason)
        else:
            super().addSkip(test, reason)

    def addError(self, test: Any, err: Any) -> None:
        if isinstance(test, unittest.suite._ErrorHolder) and self.test_index != -1:
            self.check_picklable(test, err)
            self.events.append(("addError", -1, test.id(), err))
            unittest.TestResult.addError(self, test, err)
        else:
            super().addError(test, err)


class _HolderRunner(RemoteTestRunner):
    resultclass = _HolderResult


class _HolderParallelSuite(ParallelTestSuite):
    runner_class = _HolderRunner

    def handle_event(self, result: Any, tests: Any, event: Any) -> None:
        if event[0] == "addSkip" and event[1] == -1 and len(event) == 4:
            result.addSkip(unittest.suite._ErrorHolder(event[2]), event[3])
        else:  # (an addError with index -1 and an id: Django makes the holder itself)
            super().handle_event(result, tests, event)


class RecordingRunner(DiscoverRunner):
    parallel_test_suite = _HolderParallelSuite

    def get_resultclass(self) -> Any:
        base = super().get_resultclass()
        return RecordingResult if base is None else base  # --debug-sql, --pdb: not recorded

    def run_suite(self, suite: Any, **kwargs: Any) -> Any:
        found = sorted({_test_id(test) for test in iter_test_cases(suite)})
        result = super().run_suite(suite, **kwargs)
        path = os.environ.get("CGSUITE_RESULTS")
        if path:
            with open(path, "w") as out:
                report = {"found": found, "outcomes": RecordingResult.outcomes}
                json.dump(report, out, indent=0, sort_keys=True)
        return result
