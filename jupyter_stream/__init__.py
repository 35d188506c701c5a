"""jupyter_stream: watch a language model program think."""
