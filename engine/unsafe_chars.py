"""Characters that never belong in text we store or send, as regex character-class bodies.

One definition for the importer's fields, survey answers and rendered subjects, so that what a
name may not hold and what a subject drops cannot drift apart.
"""

#: C0 and C1 control characters (CR, LF, NUL, tab, escape, NEL ...).
CONTROLS = r"\x00-\x1f\x7f-\x9f"
#: The same without tab and line breaks (LF, CR), which free text keeps.
CONTROLS_BUT_TAB_AND_LINE_BREAKS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
#: Bidi embeddings, overrides and isolates (which reorder text: "gnp.exe" shown as "exe.png"), the
#: zero-width space, word joiner and invisible operators, and the BOM. ZWJ and ZWNJ are not here:
#: emoji sequences and some scripts need them.
INVISIBLE = r"\u200b\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
