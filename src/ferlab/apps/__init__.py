"""Applications on top of the inference API: the web service, video and webcam tools."""
