"""The city's own accounts, computed from the case store (docs/analytics.md).

- `sheet` / `scoring`: assessment sheets (考核评分细则) as YAML, scored per grid cell, street,
  squad or camera for a period, with the cases behind every deduction.
- `report`: daily to yearly analysis reports (日研判 … 年总结) as HTML, PDF and Excel.
- `export`: cases as CSV or Excel with filters.
- `places`: grid cells with their street and squad, and the city's zones, for all of the above
  and for the map page.

Everything here only reads the case store (its own queries in `casedata`); nothing writes cases.
"""
