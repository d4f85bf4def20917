from vpool.placement.groups import breach, joining_breach


def test_a_group_holds_or_says_how_it_is_broken():
    assert breach("anti-affinity", {"a": "h1", "b": "h2"}) is None
    assert breach("anti-affinity", {"c": "h1", "a": "h1", "b": "h1", "d": "h2"}) == "a, b and c share h1"
    assert breach("affinity", {"a": "h1", "b": "h1"}) is None
    assert breach("affinity", {"a": "h2", "b": "h1", "c": "h1"}) == "its VMs are on h1 (b and c), h2 (a)"
    assert breach("soft-anti-affinity", {"a": "h1", "b": "h1"}) is None  # soft: never broken
    assert breach("affinity", {}) is None


def test_joining_follows_the_placement_filters_rules():
    assert joining_breach("anti-affinity", "x", "h1", {"a": "h2"}) is None
    assert "where a and b of the anti-affinity group already run" in joining_breach(
        "anti-affinity", "x", "h1", {"a": "h1", "b": "h1"})
    assert joining_breach("affinity", "x", "h1", {}) is None             # the first member sets the host
    assert joining_breach("affinity", "x", "h1", {"a": "h1"}) is None
    assert "x is on h2 and the affinity group's VMs are on h1" in joining_breach("affinity", "x", "h2", {"a": "h1"})
    assert joining_breach("soft-anti-affinity", "x", "h1", {"a": "h1"}) is None
