"""HL7 v2 intake cores, free of I/O: read the MSH header, check it is supported, build the ACK.

``header``     reads MSH without a full parse (HL7 v2.5.1 §2.14.9); raises ``HeaderError``
``charsets``   MSH-18 (HL7 table 0211) to Python codecs; where a message stops decoding
``rejection``  ``HeaderError``, ``ErrorDetail``, table 0357 codes and whether they mean AE or AR
``policy``     whether a channel accepts the message type, version and processing id (§2.9.2.2)
``ack``        the acknowledgement bytes and the acknowledgement mode (§2.9, §2.14.8 MSA, ERR)
"""
