"""End to end (detect_tiled + NN + clusters) on one simulated image with peak RSS:
``python benchmarks/e2e_rss.py 8192`` (CPU; the stand-in model of fastsac.bench).
Run it in a fresh process: ru_maxrss is the process-wide peak."""
import resource, time, json, sys
import numpy as np
from fastsac.bench import synthetic_image, stand_in_model
from fastsac import infer
from fastsac.spatial import nearest_neighbors, clusters
from fastsac._backend import Backend
from fastsac import peaks
size = int(sys.argv[1])
img, truth = synthetic_image(size, seed=0)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
net, _ = stand_in_model()
t0 = time.perf_counter()
det = infer.detect_tiled(img, net, threshold=0.5, min_distance_px=3.0, refine="gaussian", fit_radius_px=3, sigma_px=1.4, halo=16, device="cpu")
t1 = time.perf_counter()
nn = nearest_neighbors(det.xy); cl = clusters(det.xy, cutoff=10.0)
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from fastsac.evaluate import match_points
sel = lambda p: p[(p[:, 0] < 1024) & (p[:, 1] < 1024)]
m = match_points(sel(det.xy), sel(truth), tolerance_px=2.0)
print(json.dumps({"size": size, "e2e_s": t2 - t0, "detect_s": t1 - t0, "spatial_s": t2 - t1, "mpx_s": size*size/1e6/(t2-t0),
  "timings": det.timings, "tile": det.params["tile"], "batch": det.params["batch_size"], "n": len(det), "truth": len(truth),
  "f1_2px_1024crop": m.f1, "peak_rss_mb": rss, "rss_after_image_mb": rss0, "peaks_backend": det.peaks_backend, "spatial_backend": nn.backend,
  "nms_backend": peaks._nms_kernel.resolve("auto").value}, indent=1))
