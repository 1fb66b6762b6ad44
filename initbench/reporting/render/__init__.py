"""The report's renderers: the format-neutral document (:mod:`initbench.reporting.model`)
drawn as terminal text, markdown, LaTeX or HTML, and the data formats (csv, json)."""
