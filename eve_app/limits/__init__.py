"""What a visitor may send, one module for each thing limited; every limit is a flag (see `settings.py`).

- `chat`: a chat message (its images' bytes and pixels, how many, the question's length) and the bounded decoding.
- `raw_requests`: raw HTTP requests, before Gradio reads them (the upload quota, the event endpoints' bodies).
- `uploads`: a fine-tuning upload (archive and unpacked size, files, the dataset file and its rows).

Nothing is imported here, so the jobs layer can take `uploads` without the web server's modules.
"""
