def write_montage(*a, **k): raise NotImplementedError
MontageResult = None
