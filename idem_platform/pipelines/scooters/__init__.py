"""The scooter-trips example pipeline: inbox files, cleaning and validation, assets, file sensor, simulator."""
