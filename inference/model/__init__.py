"""The model stage: what a model is (our metadata, Deepness keys, STAC MLM items, the ONNX header),
where model files live, the user's models, the band vocabulary models are written in, and onnxruntime
sessions.
"""
