"""Notebook front ends: the widget (``widget``: StreamWidget; ``sink``: WidgetSink, which feeds it; ``wire``: their
protocol), the ``%%stream`` magic (``magic``), ``show`` and the cell's display with its static snapshot."""
