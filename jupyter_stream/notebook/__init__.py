"""Notebook front ends: ``jupyter_stream.notebook.widget`` holds the StreamWidget and its WidgetSink."""
