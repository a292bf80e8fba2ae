"""The dashboard's widgets: they render what the app hands them and hold no router state."""
