"""Cost placeholder (filled below)."""


def plan_cost_lines(planned, report):
    return []
