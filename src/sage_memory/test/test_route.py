"""Routes over the remembered grid: around what is in the way, never through it."""

import math

import numpy as np
from sage_memory.places import FIELDS, PlacesConfig, PlacesFeature, tokens
from sage_memory.route import Routes
from sage_memory.spatial import SpatialMemory

N = len(FIELDS)


def walled(gap_y=None):
    """A memory whose grid holds a wall along x = 1 m from y = -1.5 to 1.5 m (a gap at gap_y)."""
    mem = SpatialMemory()
    mem.log_odds[:] = -1.0                                  # floor seen free everywhere
    ys = np.arange(-1.5, 1.5 + 1e-9, 0.05)
    if gap_y is not None:
        ys = ys[np.abs(ys - gap_y) > 0.6]
    mem._mark(np.full(len(ys), 1.0), ys, 5.0)
    return mem


def test_a_path_goes_around_a_wall_and_its_waypoint_turns_off_the_straight_line():
    routes = Routes(walled(), 0.0, 0.0)
    wx, wy, length = routes.to(2.0, 0.0)
    assert abs(math.atan2(wy, wx)) > 0.7                     # steers off the line to the goal
    # around an end of the wall: at least the two legs past the end, clear of it
    around = 2 * math.hypot(1.0, 1.5 + 0.25)
    assert around - 0.3 < length < 1.4 * around, length        # 8-neighbour, kept clear
    # the path never passes within the clearance of an occupied cell
    mem = walled()
    col, row = mem.cell(wx, wy)
    assert mem.log_odds[row, col] < 0


def test_a_gap_in_the_wall_is_taken_and_an_open_floor_is_straight():
    wx, wy, length = Routes(walled(gap_y=0.0), 0.0, 0.0).to(2.0, 0.0)
    assert abs(math.atan2(wy, wx)) < 0.3 and length < 2.4
    open_floor = SpatialMemory()
    open_floor.log_odds[:] = -1.0
    wx, wy, length = Routes(open_floor, 0.0, 0.0).to(2.0, 1.0)
    # 8 neighbours: the waypoint's bearing is the line's within half a 45-degree step
    assert abs(math.atan2(wy, wx) - math.atan2(1.0, 2.0)) < math.pi / 8 + 0.05
    assert abs(length - math.hypot(2.0, 1.0)) < 0.3


def test_no_known_path_is_none_and_a_near_goal_is_the_goal_itself():
    mem = SpatialMemory()
    mem.log_odds[:] = -1.0
    for r in (0.8, 0.85, 0.9):                              # a closed ring around the robot
        a = np.linspace(0, 2 * math.pi, 400)
        mem._mark(r * np.cos(a), r * np.sin(a), 5.0)
    routes = Routes(mem, 0.0, 0.0)
    assert routes.to(2.0, 0.0) is None
    assert routes.to(0.3, 0.1) == (0.3, 0.1, math.hypot(0.3, 0.1))
    assert Routes(SpatialMemory(), 40.0, 0.0).to(41.0, 0.0) is None   # off the grid


def test_the_places_token_carries_the_route_and_falls_back_to_the_straight_line():
    from types import SimpleNamespace as Det
    places = PlacesFeature(PlacesConfig(start_place=False))
    for mem, turned in ((walled(), True), (walled(gap_y=0.0), False)):
        d = Det(class_id='red', score=1.0, bearing=0.0, bearing_variance=1e-4, range=2.0,
                range_variance=1e-3)
        mem.observe(0.0, (0.0, 0.0, 0.0), np.zeros((3, 3)), [d])
        t = tokens(places.step(mem, (0.0, 0.0, 0.0), 0.0).vector)[0]
        assert t[0] == 1 and t[8] == 0 and abs(t[2]) < 0.05          # straight ahead ...
        assert (abs(math.atan2(t[10], t[9])) > 0.7) == turned      # ... the way there is not
        assert t[11] * 8.0 >= t[3] * 8.0 - 0.2                    # never shorter than the line
