"""The recipe of the shipped small default model (`assets/eve-tiny`): `make default-model` runs it.

    python -m recipes.default_model --work runs/eve-tiny              # train (resumable), score, export
    python -m recipes.default_model.track --work runs/eve-tiny        # follow a run from beside it
    python -m recipes.default_model.ocr_by_offset --model assets/eve-tiny   # OCR by pixel offset from the grid

`recipe.py` holds the model's size, the tokenizer and the stages; `track.py` scores checkpoints on held-out samples
and keeps the best; `export.py` writes the best one with its evaluation and model card (`model_card_template.md`).
"""
