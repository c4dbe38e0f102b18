"""The sovereignty assessment (``smimekit assess``) and the crisis drill (``smimekit drill``).

docs/assess.md explains every finding. :mod:`smimekit.audit.model` is the shared vocabulary:
checks produce :class:`~smimekit.audit.model.Finding` objects, the report renders an
:class:`~smimekit.audit.model.Assessment`, the drill writes a
:class:`~smimekit.audit.model.DrillReport` that the next assessment includes.
"""
