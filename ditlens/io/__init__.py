"""Reading user images and masks; writing output folders and files whole or not at all."""
