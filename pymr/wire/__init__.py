"""What travels between pymr's processes, and how it is encoded.

``protocol`` holds every message, the header codec and the records codec (the only
module that speaks msgpack); ``keys`` the types that travel, the partition of a key,
the total order and the merge. It may import only the base modules at the top of
``pymr`` (``errors``, ``config``, ...).
"""
