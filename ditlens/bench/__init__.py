"""`ditlens bench`: the paper's findings and uses as numbers with controls."""
