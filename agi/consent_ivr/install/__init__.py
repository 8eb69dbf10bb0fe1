"""`consent-ivr install-asterisk`: putting the product on an Asterisk box and taking it off again.

`layout` finds Asterisk's folders (asterisk.conf's ``[directories]``, else the usual places),
`plan` says what a box needs (sans I/O), `steps` compares that with the disk and the manifest of
installed files (`files`) and keeps only the steps that change something, `uninstall` makes the
steps that remove an install, and `apply` runs steps all or nothing.
"""
