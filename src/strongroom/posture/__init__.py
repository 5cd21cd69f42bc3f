"""Security posture: scoring a deployment against RAND's security levels SL1–SL5.

:func:`~strongroom.posture.facts.collect` reads live evidence from a
deployment, :func:`~strongroom.posture.assess.assess` scores it per control
family together with a declaration of what software cannot see, and
:func:`~strongroom.posture.report.render_html` writes the page. See
docs/posture.md.
"""
