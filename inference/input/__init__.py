"""The input stage: the raster as a product delivers it (Sentinel-2 SAFE and band folders, GF-6),
its bands named and scaled to reflectance, the area of interest, the cloud mask's classification, and
the tables a user hands in.
"""
