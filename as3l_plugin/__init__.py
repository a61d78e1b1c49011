"""as3l_plugin: Active Self-Semi-Supervised Learning (AS3L) for USB (semilearn 0.3.2).

Importing this package is cheap (no torch, no semilearn). The USB integration lives in
:mod:`as3l_plugin.usb`; importing it registers ``as3l_flexmatch`` with semilearn.
"""

__version__ = "0.1.0"
