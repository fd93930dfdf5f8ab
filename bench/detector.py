"""Object detection on the world's renders against ground truth.

`python bench/detector.py` → bench/results/detector.json: summary detector_precision,
detector_recall, detector_range_err_m, detector_bearing_err_deg, ms_per_frame. The
camera node runs this detector (sage_sensors.detect) on every frame.
"""

import time

import common  # noqa: F401  (sets up the environment)
from common import write
from sage_sensors.detect import Detector
from sage_sim.evaluate import DETECTION, evaluate_detector


def main():
    detector = Detector()
    timings = []

    def timed(*args):
        t0 = time.perf_counter()
        out = detector.detect(*args)
        timings.append(time.perf_counter() - t0)
        return out
    r = evaluate_detector(timed, DETECTION, steps=30)
    ms = 1000 * sorted(timings)[len(timings) // 2]
    summary = {'detector_precision': round(r['precision'], 4),
               'detector_recall': round(r['recall'], 4),
               'detector_range_err_m': round(r['range_err_m'], 3),
               'detector_bearing_err_deg': round(r['bearing_err_deg'], 2),
               'ms_per_frame': round(ms, 2)}
    rows = [('measure', 'value'),
            ('frames', len(timings)),
            ('objects in view (>= 3 columns)', r['visible']),
            ('precision', summary['detector_precision']),
            ('recall', summary['detector_recall']),
            ('range error, mean / median (m)',
             f"{r['range_err_m']:.3f} / {r['range_err_median_m']:.3f}"),
            ('bearing error, mean (deg)', summary['detector_bearing_err_deg']),
            ('time per 160x120 frame, median (ms)', summary['ms_per_frame'])]
    write('detector', summary, rows, r)


if __name__ == '__main__':
    main()
