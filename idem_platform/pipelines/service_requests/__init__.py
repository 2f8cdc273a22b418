"""The 311 service-requests example pipeline: source system, assets, late-data sensor."""
