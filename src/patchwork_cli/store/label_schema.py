"""labels.csv's fixed columns, named here only: their names, their order and the kind of value each
holds. labels.csv is these columns, in this order, then one column per class (the original
patchwork format); every module that reads or writes the table, or one of its columns, takes the
names from here.

A kind says how its columns are read, held and written, and each reader and writer of the table
handles every kind: label_table (the CSV: a column's cells, an absent column, a label field's
check), label_cache (the parsed copy in Arrow), label_imports (an import CSV's cells) and journal
(an edit replayed on the table). The kinds:

- path: the image, as stored (store/paths.py); required, never empty, unique; held as pandas'
  Arrow-backed str (label_table.filepath_column). One column, the row's key: FILEPATH.
- flag: True or False; a cell is read as TRUE_CELLS or FALSE_CELLS whatever its case and
  written True / False; an absent column is all False.
- text: any text, "" for none (an edit sets it back with None); held as object; an absent
  column is all "".

A new fixed column of one of these kinds is one entry in KINDS, which also changes the parsed
copy's key (label_cache). Nothing is imported: the config parser, which refuses these names as
classes, reads them from here.
"""

from typing import Literal

FILEPATH = "filepath"
EXCLUDE = "exclude"
VALIDATION = "validation"
SUBSET = "subset"

Kind = Literal["path", "flag", "text"]
KINDS: dict[str, Kind] = {FILEPATH: "path", EXCLUDE: "flag", VALIDATION: "flag", SUBSET: "text"}

FIXED_COLUMNS: tuple[str, ...] = tuple(KINDS)  # in labels.csv's order, before the classes
FLAG_COLUMNS = tuple(name for name, kind in KINDS.items() if kind == "flag")
TEXT_COLUMNS = tuple(name for name, kind in KINDS.items() if kind == "text")
EDITABLE_COLUMNS = tuple(name for name in FIXED_COLUMNS if name != FILEPATH)  # what an edit sets beside classes

# A flag cell's spellings, compared once stripped and lowered; an empty cell is False.
TRUE_CELLS = ("true", "1", "yes")
FALSE_CELLS = ("false", "0", "no", "")
