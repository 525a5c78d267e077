"""The Gradio UI: one module per tab; `build_app` assembles them. The only package that imports gradio."""

from .app import CSS, HIDE_SHARE, build_app

__all__ = ["CSS", "HIDE_SHARE", "build_app"]
