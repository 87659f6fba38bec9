"""Reading user images, masks and text files; writing output folders and files whole or not at all."""
