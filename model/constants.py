"""Special values shared by the processor, the model and the training recipe (same values as the official release)."""

# Official sentinel that marks where an image goes in a tokenised prompt before expansion.
IMAGE_TOKEN_INDEX = -200
# Placeholder text that users write in prompts; it is not a vocabulary token.
DEFAULT_IMAGE_TOKEN = "<image>"
# Label value ignored by the loss.
IGNORE_INDEX = -100
