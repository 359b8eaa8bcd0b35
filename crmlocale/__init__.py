"""The CRM in the user's language, date format and time zone (issue #13, section 4).

``catalogues``: gettext catalogues (Babel, .po files in ``locale/``) chosen by SuiteCRM
language codes (``en_us``, ``ru_RU``, ``de_DE``); ``dates``: SuiteCRM's PHP date/time
formats in the user's time zone.  Pure, besides reading the shipped .po files once: no
database (crmsync.userlocale reads SuiteCRM's preferences), no sockets.
"""
