"""Safe loading and validation of user files: models, datasets, archives."""
