"""The bottom layer every other package imports: the project's errors and file helpers."""
