"""hydrovisor."""
