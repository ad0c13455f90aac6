"""The run stage: options, the plan that decides everything, and its execution: the working grid
read strip by strip, the network on batches of tiles, blending, classifying, the checks against the
training data, and what the run found.
"""
