"""Small widgets shared by more than one page."""
