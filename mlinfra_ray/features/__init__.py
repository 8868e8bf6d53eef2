"""Feature transforms (fitted state as JSON) shared by training and serving."""
