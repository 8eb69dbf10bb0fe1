"""`consent-ivr install-asterisk`: putting the product on an Asterisk box and taking it off again.

`layout` finds Asterisk's folders (asterisk.conf's ``[directories]``, else the usual places),
`plan` says what a box needs (sans I/O), `apply` compares that with the disk and its manifest of
installed files, then installs, updates or removes — all of it or nothing.
"""
