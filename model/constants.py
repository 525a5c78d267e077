"""Special values shared by the processor, the model and the training recipe (same values as the official release)."""

# Official sentinel that marks where an image goes in a tokenised prompt before expansion.
IMAGE_TOKEN_INDEX = -200
# The image placeholder users write in prompts (official DEFAULT_IMAGE_TOKEN) is `shared.IMAGE_PLACEHOLDER`.
# Label value ignored by the loss.
IGNORE_INDEX = -100
