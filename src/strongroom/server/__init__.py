"""strongroom server: the signed-request HTTP API (``strongroom serve``) and its shared context."""
