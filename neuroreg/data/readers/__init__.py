"""Readers: each turns one published format into a :class:`~neuroreg.data.recording.NeuralRecording`.

=====================  ===========================================  =======================
module                 format                                       function
=====================  ===========================================  =======================
``sensorium``          Sensorium 2022 / neuralpredictors file tree   ``read_sensorium``
                       (zip or folder), older single HDF5            ``read_static_hdf5``
``cadena``             Cadena et al. 2019 pickle                     ``read_cadena``
``allen``              Allen Brain Observatory NWB 1 (natural scenes) ``read_allen_natural_scenes``
``brainio``            Brain-Score / BrainIO netCDF assembly         ``read_brainio``
``monkey``             sinzlab monkey session pickle + image folder  ``read_monkey_session``
``nwb``                NWB 2 (pynwb, optional extra ``nwb``)          ``read_nwb``
``arrays``             plain npy / npz / mat arrays                  ``read_arrays``
``cowley2023``         Cowley et al. 2023 V4 zip of JPEGs + npy      ``read_cowley2023``
=====================  ===========================================  =======================

Modules are imported on use; nothing here imports a reader.
"""
