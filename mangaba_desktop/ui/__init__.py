"""The PySide6 interface: the only place that imports Qt, qasync or pyqtgraph."""
