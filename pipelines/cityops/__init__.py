"""City workflows on top of cases (docs/city-operations.md): the frontage register (门前三包), warn then
re-check then a case, the call-out list for flyposting numbers (追呼/停机), verification reports back
to the dispatch platform, and patrol-vehicle video. Road grades live in `detect.grades`; the frontage
register in `pipelines.shops` (with its spreadsheet reader `pipelines.tables`), below triage, whose
cases name the responsible shop, while the workflows here build on triage (patrol video)."""
