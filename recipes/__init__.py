"""Scripts that made the project's own models with the library (`model/`), kept apart from it as LLaMA-Factory keeps
`examples/`: nothing in `model/` or `eve_app/` imports them, and they are not part of the installed package."""
