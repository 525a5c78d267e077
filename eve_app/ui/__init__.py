"""The Gradio UI: one module per tab; `build_app` assembles them. The only package that imports gradio."""

from .app import CSS, build_app

__all__ = ["CSS", "build_app"]
