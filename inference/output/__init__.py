"""The output stage: GeoTIFFs written strip by strip, outputs staged and committed under a lock,
small regions removed and polygons written and measured, styles, the report, the one presenter of a
run's results, and the preview.
"""
