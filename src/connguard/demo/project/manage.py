#!/usr/bin/env python
"""``python -m connguard.demo.project.manage <command>`` (settings from ``CGT_*`` variables).

The project is a package of the installed connguard, so this runs from any directory.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connguard.demo.project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
