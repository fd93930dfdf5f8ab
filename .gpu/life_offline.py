"""Offline miniature of sage life: demo day -> BC -> nights of DAgger; teacher as argv[1]."""
import copy, sys, time
import numpy as np, torch
from sage_coherence.model import CoherenceConfig, CoherenceModel
from sage_coherence.runtime import TorchRuntime
from sage_sim.evaluate import MORNING, evaluate
from sage_sleep.agent import CoherencePolicy
from sage_sleep.learn import collect, train, default_config

teacher = sys.argv[1]
demo_n, demo_u, night_u, days = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(2)
cfg = default_config()
def score(model, n=30):
    m = copy.deepcopy(model).eval()
    r = evaluate(lambda w: CoherencePolicy(TorchRuntime(m, 'x')), MORNING.__class__('m', MORNING.seeds[:n]), workers=2)
    return r.success_rate
t0 = time.monotonic()
demos = collect(range(demo_n), None, beta=1.0, seed=0, workers=2, teacher=teacher)
print(f'demo {len(demos)} eps success {np.mean([d.success for d in demos]):.2f} steps {sum(len(d.teacher) for d in demos)} in {time.monotonic()-t0:.0f}s', flush=True)
torch.manual_seed(0)
model = CoherenceModel(cfg)
t0 = time.monotonic()
terms = train(model, demos, updates=demo_u, batch=128, lr=2e-3, seed=0)
print(f'BC {time.monotonic()-t0:.0f}s {terms}; morning {score(model):.2f}', flush=True)
data = list(demos)
for day in range(days):
    seeds = list(range(10000, 10005)) + list(range(50000 + 15 * day, 50000 + 15 * (day + 1)))
    t0 = time.monotonic()
    eps = collect(seeds, model, beta=0.0, seed=day, workers=2, teacher=teacher)
    data += eps
    print(f'day {day+1}: robot success {np.mean([e.success for e in eps]):.2f} in {time.monotonic()-t0:.0f}s', flush=True)
    cand = copy.deepcopy(model)
    t0 = time.monotonic()
    train(cand, data, updates=night_u, lr=1e-3, seed=day)
    model = cand
    print(f'night {day+1}: trained {time.monotonic()-t0:.0f}s; morning {score(model):.2f}', flush=True)
