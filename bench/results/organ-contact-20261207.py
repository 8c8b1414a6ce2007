import numpy as np, sys
from scipy import ndimage as ndi
sys.path.insert(0,'bench'); import second_patient as sp
from pathlib import Path
from napari_medseg.io import read_volume

def contact(lab):
    """per organ piece: (organ, size, {other label: fraction of its outer faces})"""
    out=[]
    for k in range(1,9):
        comps,n=ndi.label(lab==k)
        for i in range(1,n+1):
            m=comps==i
            tally={}
            for ax in range(3):
                for sh in (1,-1):
                    nb=np.roll(lab,sh,axis=ax); mm=np.roll(m,sh,axis=ax)
                    valid=np.ones_like(m)
                    idx=[slice(None)]*3; idx[ax]=0 if sh==1 else -1
                    valid[tuple(idx)]=False  # rolled-in faces from the other edge: not inside the volume
                    face=m & ~mm & valid  # voxel in piece whose neighbour (in -sh direction) is outside piece
                    vals=nb[face]
                    for v,c in zip(*np.unique(vals,return_counts=True)):
                        tally[int(v)]=tally.get(int(v),0)+int(c)
            tot=sum(tally.values())
            if tot: out.append((k,int(m.sum()),{v:round(c/tot,2) for v,c in sorted(tally.items(), key=lambda t:-t[1])[:3]}))
    return out
cases={'sample ref':'/work/shared/data/ct_abdomen_labels.nii.gz','B pred (e15)':'/tmp/e15/b.nii.gz','B ref':'/tmp/e16/bref.nii.gz'}
mr=sp.synapse_labels(sp.DATA/"example_seg_mr.nii.gz","total_mr",Path('/tmp/e16/mrref.nii.gz')) if hasattr(sp,'synapse_labels') else None
cases['MR ref']=str(mr)
for name,p in cases.items():
    lab=read_volume(p).array.astype(np.uint8)
    print('==',name, lab.shape)
    for row in contact(lab):
        if row[1]>=20: print('  ',row)
