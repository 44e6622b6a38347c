"""Record keys: the names of what a record's metadata holds besides the EXIF fields (`metadata`), named
here for the code that makes, matches and shows records (the README's record layout)."""

PATH = "path"  # the file's path as text; `file_names.PATH_BYTES` holds a non-UTF-8 name exactly
PATHS = "paths"  # every path known to hold the record's bytes, `path` among them, as text, sorted
FILENAME = "filename"
MACHINE = "machine"  # the machine whose files the record was made from: its prune removes only such records
UPLOAD_NAME = "upload_name"  # an upload's name on the uploader's disk (its file is named by its hash)
FORMAT = "format"  # the extension, lower case
IS_RAW = "is_raw"
FILE_SIZE = "file_size"
MTIME = "mtime"
MTIME_NS = "mtime_ns"  # exact, where `mtime` (a float) does not survive Chroma's storage bit for bit
WIDTH = "width"
HEIGHT = "height"
CAPTION = "caption"
TEXT = "text"  # the lines of text read in the photo (OCR), one per line; "" where it holds none
PAIR_OF = "pair_of"  # a RAW file's record: its picture's id; the picture's record: its RAW's id (`steps.pairs`)
PAIR_ROLE = "pair_role"  # "raw" or "shown"
# Kept for filters (layout 2), derived from the keys above and the EXIF fields by `records.enrichments.derived_keys`.
FOLDERS = "folders"
TAKEN_AT = "taken_at"
TAKEN_DAY = "taken_day"
TAKEN_MONTH = "taken_month"
HAS_GPS = "has_gps"
HAS_CAPTION = "has_caption"
# Layout 3: the cell of the GPS grid a photo was taken in, "lat:lon" of its south-west corner in whole degrees, at
# 1 and at 10 degrees: a GPS box is matched by its cells (`$in`), several times faster in Chroma than by ranges.
GPS_CELL_1DEG = "gps_cell_1deg"
GPS_CELL_10DEG = "gps_cell_10deg"
# Layout 4: where the photo was taken, from its GPS (`records.places`), in GeoNames' names: the city (a big
# city's district, or a town), its region (where GeoNames' data names one) and its country; and every one of those
# names in lower case, with a bigger city whose reach holds the place (Berlin for Mitte), for the `place` filter.
PLACE_CITY = "place_city"
PLACE_REGION = "place_region"
PLACE_COUNTRY = "place_country"
PLACE_NAMES = "place_names"
# Faces (`records.people`): how many faces a photo holds (0: looked at, none; absent: not looked at yet), and the
# ids of the people in it (absent for none), for the `person` filter.
FACES = "faces"
PEOPLE = "people"


def paths_of(metadata: dict) -> list[str]:
    """Every path known to hold a record's bytes (a record written before `paths` knows its own)."""
    return list(metadata.get(PATHS) or ([metadata[PATH]] if metadata.get(PATH) else []))


STAT_KEYS = (FILE_SIZE, MTIME, MTIME_NS)  # what a touched file's record learns
FILTER_KEYS = (FOLDERS, TAKEN_AT, TAKEN_DAY, TAKEN_MONTH, HAS_GPS, HAS_CAPTION, GPS_CELL_1DEG, GPS_CELL_10DEG,
               PLACE_CITY, PLACE_REGION, PLACE_COUNTRY, PLACE_NAMES)
