"""Record keys: the names of what a record's metadata holds besides the EXIF fields (`metadata`), written
once here and read everywhere a record is made, matched or shown (the README's record layout)."""

PATH = "path"  # the file's path as text; `file_names.PATH_BYTES` holds a non-UTF-8 name exactly
FILENAME = "filename"
FORMAT = "format"  # the extension, lower case
IS_RAW = "is_raw"
FILE_SIZE = "file_size"
MTIME = "mtime"
MTIME_NS = "mtime_ns"  # exact, where `mtime` (a float) does not survive Chroma's storage bit for bit
WIDTH = "width"
HEIGHT = "height"
CAPTION = "caption"
# Kept for filters (layout 2), derived from the keys above and the EXIF fields by `filters.filter_keys`.
FOLDERS = "folders"
TAKEN_AT = "taken_at"
TAKEN_DAY = "taken_day"
TAKEN_MONTH = "taken_month"
HAS_GPS = "has_gps"
HAS_CAPTION = "has_caption"

STAT_KEYS = (FILE_SIZE, MTIME, MTIME_NS)  # what a touched file's record learns
FILTER_KEYS = (FOLDERS, TAKEN_AT, TAKEN_DAY, TAKEN_MONTH, HAS_GPS, HAS_CAPTION)
