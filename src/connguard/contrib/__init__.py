"""Optional adapters: Prometheus (:mod:`.prometheus`) and Django views (:mod:`.django`)."""
