"""Path planning over the arena's grid: the HRM maze model against A* (issue 18).

The places feature gives the coherence model a route to each remembered object: a
shortest path over the remembered grid (sage_memory.route, Dijkstra). The HRM solves
mazes, so could it be the planner? This measures it on the grids the robot plans over.

    python bench/grid_planner.py data --out DIR       # the grids (seconds, CPU)
    sage hrm train --task maze --out DIR ...           # train the HRM on them (GPU)
    # DIR/run.json: the train args and GPU timings; DIR/pred.npy: its path per test grid
    python bench/grid_planner.py report --run DIR      # -> bench/results/grid_planner.json

A grid is one episode's arena at ``CELL`` m a cell (6 m: 20 x 20), as
``sage_hrm.maze`` tokens: wall where the robot's body would touch a pillar, a beacon
other than the target or the arena's wall (the world's own free-space rule), open
elsewhere, the robot's cell the start and the target's the goal; the label is one
shortest 4-connected path. Training grids come from training seeds (random and detour
scenes, each in its 8 symmetries), test grids from the morning and detour suites.
Summary: hrm_valid_optimal (the HRM's path connects start and goal through open cells
with the shortest length), hrm_valid_optimal_detour, astar_valid_optimal (1.0: exact
by construction), astar_ms and hrm_ms_cpu (one plan, batch 1, this machine), hrm_ms_gpu.
"""

import argparse
import json
import os
import time

import common  # noqa: F401  (first: the environment)
import numpy as np
from common import write
from sage_hrm import maze as M
from sage_sim.evaluate import DETOUR, MORNING, start
from sage_sim.world import World, WorldConfig

CELL = 0.3


def grid(world: World) -> np.ndarray | None:
    """Return the episode's arena as maze tokens (None: no path or start is the goal)."""
    c = world.cfg
    _, _, free = world.free_cells(CELL)              # the world's own free-space rule
    g = np.where(free, M.OPEN, M.WALL).astype(np.int64)
    n = g.shape[0]

    def cell(x, y):
        return tuple(int(np.clip((v + c.arena_m / 2) // CELL, 0, n - 1)) for v in (x, y))
    s, e = cell(world.x, world.y), cell(*world.target_xy)
    if s == e:
        return None
    g[s], g[e] = M.START, M.GOAL
    return g if M.solvable(g) else None


def symmetries(g: np.ndarray):
    """Yield the 8 rotations and reflections of a square grid."""
    for k in range(4):
        r = np.rot90(g, k)
        yield r
        yield r.T


def make_data(n_train: int) -> dict:
    """Train grids from training seeds (and their symmetries), test from the suites."""
    world = World(WorldConfig())
    xs, ys, kinds = {'train': [], 'test': []}, {'train': [], 'test': []}, []
    seed = 0
    while len(xs['train']) < n_train:
        start(world, seed, 'detour' if seed % 2 else 'random')
        g = grid(world)
        seed += 1
        for s in symmetries(g) if g is not None else ():
            xs['train'].append(s.reshape(-1))
            ys['train'].append(M.shortest_path(s).reshape(-1))
    for suite in (MORNING, DETOUR):
        for s in suite.seeds:
            start(world, s, suite.scene)
            g = grid(world)
            if g is not None:
                xs['test'].append(g.reshape(-1))
                ys['test'].append(M.shortest_path(g).reshape(-1))
                kinds.append(suite.name)
    data = {f'{k}_{w}': np.stack(v[k]) for w, v in (('inputs', xs), ('labels', ys))
            for k in v}
    return {**data, 'vocab_size': np.int64(M.VOCAB), 'test_suite': np.array(kinds)}


def cmd_data(args) -> None:
    """Write the grids to ``args.out``/data.npz."""
    data = make_data(args.n_train)
    os.makedirs(args.out, exist_ok=True)
    np.savez_compressed(os.path.join(args.out, 'data.npz'), **data)   # travels to a GPU
    print(f"{len(data['train_inputs'])} train and {len(data['test_inputs'])} test grids of "
          f"{int(round(data['train_inputs'].shape[1] ** 0.5))}² cells in {args.out}")


def cmd_report(args) -> None:
    """Score the HRM's paths in ``args.run`` against A*; write grid_planner.json.

    ``args.run`` holds data.npz, the GPU run's run.json (its train args, timings) and
    pred.npy (the trained HRM's path for each test grid). The CPU time of one plan is
    the same model's architecture run here: with ACT at its fixed step count, its cost
    does not depend on the weights.
    """
    import torch
    from sage_hrm.cli import _trainer, build_parser
    from sage_hrm.inference import ACTRunner
    torch.set_num_threads(1)
    run = json.load(open(os.path.join(args.run, 'run.json')))      # the train command's args
    hargs = build_parser().parse_args(['eval', '--out', args.run, '--task', 'maze', *run['args']])
    data = dict(np.load(os.path.join(args.run, 'data.npz')))
    pred = np.load(os.path.join(args.run, 'pred.npy')).astype(np.int64)
    inputs, suites = data['test_inputs'], data['test_suite']
    n = int(round(inputs.shape[1] ** 0.5))
    ok = np.array([M.valid_optimal(x.reshape(n, n), p.reshape(n, n))
                   for x, p in zip(inputs, pred)])
    astar_ok = np.array([M.valid_optimal(x.reshape(n, n), M.shortest_path(x.reshape(n, n)))
                         for x in inputs])
    t = []
    for x in inputs:
        t0 = time.perf_counter()
        M.shortest_path(x.reshape(n, n))
        t.append(time.perf_counter() - t0)
    model = _trainer(hargs, data).model.eval()
    h = []
    with torch.no_grad():
        for x in inputs[:20]:
            t0 = time.perf_counter()
            ACTRunner(model, use_q_halt=False)({'inputs': torch.as_tensor(x[None])})
            h.append(time.perf_counter() - t0)
    gpu = run.get('gpu', {})
    summary = {'hrm_valid_optimal': round(float(ok.mean()), 3),
               'hrm_valid_optimal_morning': round(float(ok[suites == 'morning'].mean()), 3),
               'hrm_valid_optimal_detour': round(float(ok[suites == 'detour'].mean()), 3),
               'astar_valid_optimal': round(float(astar_ok.mean()), 3),
               'astar_ms': round(1e3 * float(np.median(t)), 3),
               'hrm_ms_cpu': round(1e3 * float(np.median(h)), 1),
               'hrm_ms_gpu': gpu.get('ms'), 'hrm_train_s': run.get('train_s'),
               'train_grids': int(len(data['train_inputs'])), 'test_grids': int(len(inputs))}
    rows = [('planner', 'valid + optimal (morning, detour)', 'ms per plan'),
            ('A* (BFS, exact)', f"{summary['astar_valid_optimal']:.2f}",
             f"{summary['astar_ms']} (CPU)"),
            ('HRM maze model', f"{summary['hrm_valid_optimal']:.2f} "
             f"({summary['hrm_valid_optimal_morning']:.2f}, "
             f"{summary['hrm_valid_optimal_detour']:.2f})",
             f"{summary['hrm_ms_cpu']} (CPU, 1 thread), {summary['hrm_ms_gpu']} (GPU)")]
    write('grid_planner', summary, rows, {'hrm_args': run['args'], 'grid_cell_m': CELL,
                                          'grid_cells': n, 'gpu': gpu})


def main():
    """Run a subcommand."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    d = sub.add_parser('data', help='write DIR/data.npz')
    d.add_argument('--out', required=True)
    d.add_argument('--n-train', type=int, default=16000)
    r = sub.add_parser('report', help='score DIR\'s trained HRM against A*')
    r.add_argument('--run', required=True)
    args = p.parse_args()
    {'data': cmd_data, 'report': cmd_report}[args.cmd](args)


if __name__ == '__main__':
    main()
