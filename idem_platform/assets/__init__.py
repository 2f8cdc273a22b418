"""One module per pipeline; each exports its assets."""
