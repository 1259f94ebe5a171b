"""The alignment report: one self-contained HTML page for sales and marketing managers.

- :mod:`serving.report.inputs`: what the report is computed from (store, history, champion, policy);
- :mod:`serving.report.sections`: each section's numbers as plain typed functions;
- :mod:`serving.report.charts`: inline SVG charts (Matplotlib);
- :mod:`serving.report.render`: the Jinja2 page and the atomic write.
"""
