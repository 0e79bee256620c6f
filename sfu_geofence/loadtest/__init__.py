"""The load tester: many synthetic participants from many countries, live policy changes, a verdict.

``sfu-geofence loadtest`` (docs/loadtest.md) proves on the operator's own machine that a policy change
removes exactly the restricted participants and that the others' media does not notice:

* :mod:`.scenario`: the command line's participants and timed steps, and who is expected to be
  refused or ejected at each step (the policy semantics of :class:`~sfu_geofence.core.policy.RoomPolicy`);
* :mod:`.worker`: a worker process running a share of the participants (synthetic peers, metered);
* :mod:`.runner`: the coordinator: spawns the server and the workers, runs the steps, shows progress;
* :mod:`.report`: the measurements, the verdict, the JSON report and the plot.
"""
